"""Training the toy world's diffusion priors through the launcher (`launch.py --config-name train-toy-...`).

Not methods: these LightningModules train the priors that the methods in systems/ then distil from.
The runner drives them like a method (framework/interfaces.py `RunnableSystem`).

    prior_training.py    what every prior trainer shares: DDPM objective, AdamW + warm-up, EMA, export
    train_text_prior.py  the text-to-image prior (models/priors/toy/text_prior.py)
    train_view_prior.py  the view-conditioned prior (models/priors/toy/view_prior.py)
    image_data.py        their data: toy renders with captions (text prior)
    view_pair_data.py    pairs of views of one toy scene (view prior)
    sample_check.py      the automatic check of a trained prior's samples against exemplar renders

It comes last in models/ (tests/test_layout.py MODELS_ORDER): it may import models.guidance (CFG),
and nothing else in models/ imports it.
"""
