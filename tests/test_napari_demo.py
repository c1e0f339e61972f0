"""`make demo` opens napari with a sample image and the k-means widget docked."""

import numpy as np


def test_demo_opens_the_coffee_sample_with_the_widget_docked(qtbot, docked):
    from napari_kmeans._napari import demo
    from napari_kmeans._napari._qt.widget import KMeansWidget

    viewer = demo.main()
    try:
        assert [layer.name for layer in viewer.layers] == ["coffee"]
        assert viewer.layers["coffee"].rgb and viewer.layers["coffee"].data.shape[-1] == 3
        widgets = docked(viewer.window)
        (widget,) = [w for w in widgets.values() if isinstance(w, KMeansWidget)]
        assert widget.controls.image.value is viewer.layers["coffee"]
        assert np.asarray(viewer.layers["coffee"].data).dtype == np.uint8
    finally:
        viewer.close()
