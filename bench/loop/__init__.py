"""The loop: drift onset → detection → retrained challenger → promotion; rollback → clients."""
