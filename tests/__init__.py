"""The runtime shape/type checker for tests: beartype with PEP 484's numeric tower (int is a float)."""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
