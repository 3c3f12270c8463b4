"""Built-in stage plugins, registered through the same path as third-party ones.

Each module is a plain set of ``@hookimpl`` functions: ``vgg_style`` (stylize),
then the postprocess chain in order: ``color``, ``resize``, ``watermark``.
"""
