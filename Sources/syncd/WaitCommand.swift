import ArgumentParser
import Foundation
import SyncDaemon

/// The barrier failover scripts use before promoting a replica.
struct WaitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Wait until every connected peer holds this folder's current state and nothing is being pulled.",
        discussion: """
            First hands every write that completed before it started to the scanner. Then exits 0 \
            once at least one peer is connected, every connected peer has acknowledged this \
            device's current sequence, this device has applied everything each read-write peer \
            announced, the index digests of read-write peers agree, no change is failing to apply \
            here, no scan or pull is pending, and no peer that gossip knows for the folder is still \
            connecting. On timeout exits 1 and says what is pending.
            """)

    @OptionGroup var home: HomeOption

    @Argument(help: "The shared folder.")
    var path: String

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 60

    func run() throws {
        let deadline = Date().addingTimeInterval(timeout)
        // Writes that completed before this command are scanned before anything else counts.
        _ = try call(ControlRequest(command: .flush, path: absolutePath(path)), home: home.resolved)
        var pending = "no status yet"
        while true {
            let response = try call(ControlRequest(command: .status, path: absolutePath(path)), home: home.resolved)
            if let folder = response.status?.folders.first {
                pending = Self.pending(folder)
                if pending.isEmpty {
                    print("in sync: \(folder.peers?.filter(\.connected).count ?? 0) peer(s) at sequence \(folder.sequence)")
                    return
                }
            }
            if Date() >= deadline {
                FileHandle.standardError.write(Data("timed out after \(timeout) s: \(pending)\n".utf8))
                throw ExitCode(1)
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// What still stands between this folder and "in sync"; empty when nothing does.
    static func pending(_ f: StatusReport.Folder) -> String {
        var reasons: [String] = []
        if f.state == "error" { reasons.append("folder paused: \(f.error ?? "error")") }
        if let failing = f.pullError { reasons.append("changes not applied here (retrying): \(failing)") }
        if f.busy == true || f.state == "scanning" { reasons.append("local scan or pull in progress (\(f.needFiles ?? 0) files, \(f.needBytes ?? 0) bytes)") }
        let peers = f.peers ?? []
        let connected = peers.filter(\.connected)
        if connected.isEmpty { reasons.append("no peer connected") }
        for p in peers where !p.connected { reasons.append("peer \(p.device) not connected yet") }
        for p in connected where p.sequence < UInt64(max(f.sequence, 0)) {
            reasons.append("peer \(p.device) at sequence \(p.sequence) of \(f.sequence) (\(p.needBytes) bytes to go)")
        }
        for p in connected where (p.applied ?? 0) < (p.announced ?? 0) {
            reasons.append("receiving from peer \(p.device): applied its sequence \(p.applied ?? 0) of \(p.announced ?? 0)")
        }
        for p in connected where p.digest == "differ" || p.digest == "pending" {
            reasons.append("peer \(p.device): index digests \(p.digest == "differ" ? "differ" : "not compared yet")")
        }
        return reasons.joined(separator: "; ")
    }
}
