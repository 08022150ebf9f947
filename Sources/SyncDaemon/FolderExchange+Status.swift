/// What `status` needs of the exchange beyond `snapshot`: the rest of the pending set and the
/// folder model's own verdict (kept apart from FolderExchange.swift, read only).
extension FolderExchange {
    struct SyncView {
        /// Entries and bytes of the batches queued behind the one applying.
        var queuedFiles: Int
        var queuedBytes: Int64
        /// A batch is applying or queued.
        var applying: Bool
        /// `FolderModel.isInSync` with the peers connected now (what `syncd wait` requires of them).
        var inSync: Bool
        var connected: Int
    }

    var syncView: SyncView {
        lock.withLock {
            let queued = model.queuedWork
            return SyncView(queuedFiles: queued.files, queuedBytes: queued.bytes, applying: model.isApplying,
                            inSync: model.isInSync(with: Set(links.keys)), connected: links.count)
        }
    }
}
