"""napari glue: dock widget, worker runner, output layers, sample data (needs napari and Qt).

napari loads these modules through ``napari.yaml``; the engine never imports them.
"""
