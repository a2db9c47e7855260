"""Configuration primitives: the bottom of the configuration stack.

``source`` reads YAML into positioned ``Node`` trees so that every error names
the file, the line and the field; ``cidr`` holds address sets; ``context``
carries what a section's compiler may use (the file's directory, the keyring).
Every stage compiles its own policy section with these, without importing the
policy compiler that calls it (which would make the layers circular).
"""
