"""Networks by name (MONAI's U-Net family) and the losses."""
