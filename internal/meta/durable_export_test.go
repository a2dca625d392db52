package meta

// SetLogSync replaces how db flushes its write-ahead log (an SQLite store
// opened with SyncFull): tests hold or count the flushes.
func SetLogSync(db *DB, sync func(path string) error) { db.write.log.sync = sync }
