"""Release metadata: the CI context, docker/metadata-action's tag rules (versions, dates, the
Handlebars subset) and the tags stage that turns them into tags, labels and annotations."""
