package cli

// VersionLineOf is versionLine, for tests that give their own build information.
var VersionLineOf = versionLine
