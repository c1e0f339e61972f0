"""The Qt side of the plugin: the dock widget and its panels (the only modules that import
Qt, magicgui, superqt or matplotlib's Qt canvas)."""
