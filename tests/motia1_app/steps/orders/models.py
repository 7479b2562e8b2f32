"""Shapes shared by the order steps (a helper module of the project, imported by step files)."""

from pydantic import BaseModel


class OrderIn(BaseModel):
    id: str
    customer: str
    amount: float
    note: str = ""
