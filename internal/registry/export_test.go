package registry

// UploadLease is how long an upload claim lasts unrenewed (tests).
const UploadLease = uploadLease
