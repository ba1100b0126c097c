package wire

// Names of a deployment's stream and subjects when none are configured:
// shippers, receivers and `ferry status` must agree on them, so they are
// spelled here only.
const (
	// DefaultStream is the JetStream stream's name.
	DefaultStream = "FERRY"
	// DefaultSubjectPrefix is the subject prefix: source S is carried on
	// subject "<prefix>.S", and the stream holds "<prefix>.>".
	DefaultSubjectPrefix = "ferry"
)
