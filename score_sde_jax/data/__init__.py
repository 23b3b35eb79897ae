"""Data: dataset readers, the sharded input pipeline and image files.

* `datasets`: every dataset as a random-access `Source` of uint8 images (and labels).
* `pipeline`: batches for training and evaluation, split over processes; data scalers.
* `image_io`: sample grids and scatter plots written as PNG files.
"""
