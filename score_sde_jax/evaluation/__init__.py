"""Sample-quality metrics: the FID Inception-v3 network, its weights, and FID / KID / IS
(docs/original_code.md#training-evaluation-and-data).

* `inception`: `FIDInceptionV3` (the 2015 TF graph as in pytorch-fid), `preprocess`,
  `make_inception_fn`, `compute_inception_outputs`.
* `inception_weights`: `load_inception_params` (``pt_inception-2015-12-05-*.pth`` or a converted
  ``.npz``; never downloads), `convert_state_dict`, and the converter CLI.
* `metrics`: `feature_stats`, `fid_from_stats`, `fid_from_features`, `kid`, `kid_and_std`,
  `inception_score`.
"""
