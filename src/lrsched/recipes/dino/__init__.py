"""phase5's recipe: self-supervised ViT pretraining (DINO family), driven by lrsched's schedules.

Modules: ``vit`` (the backbone), ``head`` (projection head), ``loss`` (DINO loss with
centering), ``augment`` (multi-crop), ``files``, ``images`` and ``data`` (image folders and
Fashion-MNIST), ``stream`` (the data workers), ``knn`` (weighted k-NN evaluation); the program:
``flags`` (command line), ``validate`` (every check), ``main`` (its parts of the run skeleton,
the plan and first outputs), ``state`` (its records), ``loop`` (building the run, training),
``checkpoint`` (saving, the identity a resume keeps, restoring), ``evaluation`` (k-NN), ``model``
(networks, optimizer groups, EMA), ``curves`` (the figure).
"""
