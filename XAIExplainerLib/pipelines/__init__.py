"""Pipelines: a volume through a model adapter and an explainer to results on the input grid.

``common`` holds the steps every product shares (checks, device, preprocessing, clean prediction, the method
call, maps back to the input grid); each product adds its own module: ``agg2exp`` (RoI matrix, context ratio,
graph, metrics, saved folder) with ``agg2exp_io`` (reading the folder back), ``roi_importance`` and ``roi_graph``.
``report`` turns saved folders of every product into one comparison page: ``report_folders`` reads and groups
them, ``report_images`` draws the slices, ``report_page`` is the HTML.
"""
