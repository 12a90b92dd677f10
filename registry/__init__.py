"""The registry: accounts, designs, immutable versions, forks, licences, change requests, blobs."""
