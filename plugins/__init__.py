"""Built-in stage plugins, registered through the same path as third-party ones.

Each module is a plain set of ``@hookimpl`` functions: ``vgg_style`` (stylize; a
package whose hooks import its torch code on first use), then the postprocess chain
in order: ``color``, ``resize``, ``watermark``; ``gallery`` (job_finished) keeps the outbox page.
"""
