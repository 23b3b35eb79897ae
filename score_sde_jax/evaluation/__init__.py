"""Evaluation of training runs and sample-quality metrics (docs/evaluation.md).

* `driver`: `evaluate`, checkpoint by checkpoint, with the modes `held_out_loss`,
  `bits_per_dim` and `sample_quality`; `protocol` (seeds, keys, settings), `checkpoint_index`,
  `progress` (resumable record), `data_passes`, `report`.
* `dataset_stats`: reference Inception statistics of a dataset.
* `inception`: `FIDInceptionV3` (the 2015 TF graph as in pytorch-fid), `preprocess`,
  `make_inception_fn`, `compute_inception_outputs`.
* `inception_weights`: `load_inception_params` (``pt_inception-2015-12-05-*.pth`` or a converted
  ``.npz``; never downloads), `convert_state_dict`, and the converter CLI.
* `metrics`: `feature_stats`, `fid_from_stats`, `fid_from_features`, `kid`, `kid_and_std`,
  `inception_score`.
* `energy_distance`: the energy distance of samples to a Gaussian mixture.
"""
