"""Bridges to other frameworks, each importing its framework only when imported itself:

    import rememr1.integrations.verl     # needs `pip install 'rememr1[verl]'`
"""
