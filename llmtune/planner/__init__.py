"""Pure decisions: from facts and settings to what a host should look like."""
