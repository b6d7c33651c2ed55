"""Images: input formats (FFCV, ImageFolder, webdataset shards), visual backbones, ImageNet helpers."""
