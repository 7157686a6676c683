package vectors

// Skiplist holds the vector files that exercise features outside what hsmkms claims,
// each with the reason. The symmetric key lifecycle files (SKLC) must never be listed.
var Skiplist = map[string]string{}
