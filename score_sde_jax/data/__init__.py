"""Data: the table of datasets, their readers, the sharded input pipeline and image files.

* `datasets`: the table `DATASETS` and `get_source`, every dataset as a random-access `Source`.
* `source`, `preprocessing`: the `Source` type; crop / resize / pad / channels of uint8 images.
* `tfds_reader`, `tfrecord`, `image_folder`, `digits`, `toy2d`: the readers, one per storage.
* `pipeline`: batches for training and evaluation, split over processes; data scalers.
* `image_io`: [0, 1] -> uint8, sample grids and scatter plots written as PNG files.

Details: docs/data.md.
"""
