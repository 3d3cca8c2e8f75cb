"""target-encharge: a Singer target that loads records into Encharge."""
