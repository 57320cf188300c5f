"""The whole cluster on one machine (`gifee up`) and, later, joining machines to it."""
