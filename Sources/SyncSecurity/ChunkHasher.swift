import CSyncCrypto
import SyncCore

/// Keyed chunk ids: HMAC-SHA-256 under the folder's chunk-id key, computed with system OpenSSL
/// (SHA-NI; see Benchmarks/RESULTS.md). The key's inner/outer states are prepared once; each id
/// then costs two context copies. Safe to share across threads: hashing only reads the key state.
public final class ChunkHasher: @unchecked Sendable {
    private let key: UnsafeMutablePointer<csync_hmac_key>

    public init(key bytes: [UInt8]) {
        key = .allocate(capacity: 1)
        key.initialize(to: csync_hmac_key())
        let ok = bytes.withUnsafeBufferPointer { csync_hmac_key_init(key, $0.baseAddress, $0.count) }
        precondition(ok == 1, "OpenSSL could not set up HMAC-SHA-256")
    }

    deinit {
        csync_hmac_key_free(key)
        key.deallocate()
    }

    public func chunkID(_ data: UnsafeRawBufferPointer) -> ChunkID {
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { out in
            let ok = csync_hmac_sha256(key, data.baseAddress, data.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            precondition(ok == 1, "OpenSSL HMAC-SHA-256 failed")
            return ChunkID(UnsafeRawBufferPointer(out))
        }
    }

    public func chunkID(_ bytes: [UInt8]) -> ChunkID {
        bytes.withUnsafeBytes { chunkID($0) }
    }
}
