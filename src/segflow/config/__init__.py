"""Configuration: the schema (every key, BiaPy's names), the YAML loader and the generated reference."""
