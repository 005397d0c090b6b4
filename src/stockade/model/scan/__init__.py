"""Model artifact scanning: find anything in a model file that would run code, touch files
or reach the network when the model is loaded, without ever loading it.

Sources (files, archive members) -> format scanners (one module per format under
`formats/`) -> findings -> the shared writers.
"""
