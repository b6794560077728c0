"""DINO-X: self-supervised ViT pretraining (DINO family), driven by lrsched's schedules.

Modules: ``vit`` (the backbone), ``head`` (projection head), ``loss`` (DINO loss with
centering), ``augment`` (batched multi-crop on the device), ``data`` (Fashion-MNIST and image
folders), ``knn`` (weighted k-NN evaluation); the program: ``flags`` (command line), ``main``
(checks, plan, outputs), ``loop`` (run state, training, checkpoints, evaluation), ``model``
(networks, optimizer groups, EMA), ``curves`` (the figure).
"""
