"""Monitoring cost benchmark: one drift + OOD check against window size and sampling bounds."""
