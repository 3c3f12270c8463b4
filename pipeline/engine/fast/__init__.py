"""Fast presets: a preset distilled into a feed-forward network (Johnson, Alahi & Fei-Fei 2016).

The network is trained once per preset on the preset's own objective
(:mod:`pipeline.engine.nst.objective`), then renders a photo in one forward pass
at its own resolution, in tiles (:mod:`pipeline.engine.fast.tiling`).
"""
