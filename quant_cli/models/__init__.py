"""Models: one contract (base.py), one registry, one file per family.

A model class registers itself by declaring `name` (quant_cli.models.base.Model.__init_subclass__).
The registry imports the modules below to register the tabular families and the ensembles; the
torch architectures are every module of quant_cli.models.torch, imported when a torch model is
first asked for (torch takes seconds to import).
"""

MODEL_MODULES = ("boosting", "classical", "ensemble")
