"""The Generate tab: its page, its handlers and their state, one module each.

    page        the tab's components and events (``generate_page``, ``wire_generate``)
    sampling    ``GenerateTab``: a run with live previews, Stop, the waiting room's turns, the run kept for Learn
    cards       ``Cards``: the model cards, a model's controls and one-click examples, a settings link opened
    presets     the examples and settings links (what they hold, checked)
    upscale     ``UpscaleTab``: super-resolution of a picked image, before / after
    live        ``LiveTab``: a distilled student's images following the sliders; Learn's distillation lesson
    live_page   Live's events
"""
