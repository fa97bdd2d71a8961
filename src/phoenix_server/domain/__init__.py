"""Phoenix's vocabulary: frozen dataclasses and enums with pure logic and no I/O.

Every stage of the pipeline (signals → observations → symptoms → incident →
decision → recovery → outcome) takes and returns these types, so each stage can
be tested alone. Only the standard library is imported here.
"""
