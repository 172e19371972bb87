"""The community's MSST format: YAML configs, ``.ckpt``/safetensors checkpoints, building a model from a config."""
