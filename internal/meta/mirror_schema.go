package meta

// mirrorSchema is migration 5: repository mirroring. Until mirroring
// lands it creates nothing.
const mirrorSchema = `SELECT 1`
