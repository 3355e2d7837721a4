/* stub: not yet written */
