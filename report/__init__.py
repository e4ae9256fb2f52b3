"""Writers of an airframe's bill of materials (issue 15): CycloneDX 1.6 JSON for tools, HTML for a person.

The bill itself is built in :mod:`attest.bom`; :mod:`report.evidence` verifies handed-over evidence
against a trust directory first. Imports ``attest``, ``hardware`` and ``truststore`` only.
"""
