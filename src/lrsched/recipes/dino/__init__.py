"""DINO-X: self-supervised ViT pretraining (DINO family), driven by lrsched's schedules.

Modules: ``vit`` (the backbone), ``head`` (projection head), ``loss`` (DINO loss with
centering), ``augment`` (batched multi-crop on the device), ``data`` (Fashion-MNIST and image
folders), ``knn`` (weighted k-NN evaluation), ``pretrain`` (the program).
"""
