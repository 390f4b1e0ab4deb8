"""Definition analysis: SELECT text → validated Definition (lineage graph), or DefinitionError."""

from .analyzer import analyze
from .model import Definition, Edge, Hop, Lineage, Occurrence, OutputColumn, Relation

__all__ = ["Definition", "Edge", "Hop", "Lineage", "Occurrence", "OutputColumn", "Relation", "analyze"]
