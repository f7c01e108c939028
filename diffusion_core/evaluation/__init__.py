"""Evaluation: how good are a model's samples, measured against held-out real data.

* ``classifier``: a small classifier per dataset, trained with the project's own command; its penultimate
  features are the feature space of FID;
* ``metrics``: the Fréchet distance and per-attribute F1, and which attributes can be judged at all;
* ``pose_metrics``: how well a figure follows a stickman drawing (adherence, precision);
* ``evaluate``: the ``evaluate`` command: a model's samples scored with the above, kept after every batch so
  a stopped run resumes; memorisation;
* ``super_resolution``: an SR stage against bicubic, a cascade against its base's upscale;
* ``picks``: a multi-label model as users use it, a few picked attributes (issue 20).
"""
