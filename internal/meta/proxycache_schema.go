package meta

// proxyCacheSchema is migration 6: the pull-through cache. Until it lands
// it creates nothing.
const proxyCacheSchema = `SELECT 1`
