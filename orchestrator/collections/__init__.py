"""Collections on the engine's side: archives expanded into items within limits
(``archives``), and a collection's items stored one object each from the archive that
carried them (``bundles``)."""
