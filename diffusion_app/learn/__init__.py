"""The Learn tab: its page and its handlers, one module each.

    page        the tab's components and events (``learn_page``, ``wire_learn``)
    handlers    ``LearnTab``: explain a step of the kept run, its trajectory, interpolation between two seeds
    explain     a sampler step written out with its numbers (from ``diffusion_core.explain_step``)
    compare     ``CompareTab``: samplers x steps and guidance grids
    branch      ``BranchTab``: continue the kept run from a step with other settings
"""
