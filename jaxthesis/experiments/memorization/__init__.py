"""Studies of thesis chapter 3 (memorization): `jaxthesis memorization ...`."""
