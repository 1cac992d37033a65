"""tessy: teacher-student cooperative data synthesis (TESSY) for reasoning models.

The package is organised by concept, each a small interface with peer implementations:
backends (who generates tokens), formats (how a model family writes prompts and thinking),
predictors (where a span must be cut), and the engine that runs Algorithm 1 over them.
Heavy libraries (torch, transformers) are imported only inside the modules that use them.
"""

__version__ = "0.1.0"
ROLES = ("student", "teacher")
