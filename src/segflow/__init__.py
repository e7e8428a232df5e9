"""segflow: train and apply 2D/3D semantic segmentation models from one YAML file."""

__version__ = "0.1.0"
