"""Small models trained by this package's own commands, shipped inside it (docs/pretrained.md).

Each model is two files here: ``<name>.json`` (its config, training step and the commands that
made it) and ``<name>.msgpack`` (its EMA parameters as float16). Load one with
`score_sde_jax.checkpoints.load_pretrained`.
"""
