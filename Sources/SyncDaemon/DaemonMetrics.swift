import CoreMetrics
import Foundation
import Prometheus
import SyncFS

/// `/metrics`: the status report and the event stream as Prometheus metrics, through
/// swift-metrics with this daemon's own `PrometheusMetricsFactory` (not the process-wide
/// `MetricsSystem`, so daemons in one process never share a registry). Metric names are listed
/// in Docs/Operations.md, "Monitoring".
///
/// Gauges and the byte/apply/conflict/error counters are set from the status report when a
/// scrape comes (the report is the one source of those numbers; counters advance by what the
/// report's running totals moved since the last scrape). The scan and apply histograms are fed
/// by `observe`, from `DaemonEvents`.
final class DaemonMetrics: @unchecked Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let lock = Lock()
    private var gauges: [String: CoreMetrics.Gauge] = [:]
    private var counters: [String: (counter: CoreMetrics.Counter, last: Int64)] = [:]
    private var timers: [String: CoreMetrics.Timer] = [:]

    static let scanDuration = "syncd_folder_scan_duration_seconds"
    static let applyDuration = "syncd_folder_apply_duration_seconds"

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        let buckets: [Duration] = [.milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                   .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300)]
        factory.durationHistogramBuckets = [Self.scanDuration: buckets, Self.applyDuration: buckets]
        self.factory = factory
    }

    /// A scan or an apply finished: its duration goes into its folder's histogram.
    func observe(_ event: DaemonEvent) {
        let name: String
        switch event.kind {
        case .scanned: name = Self.scanDuration
        case .batchApplied: name = Self.applyDuration
        default: return
        }
        guard let seconds = event.seconds else { return }
        let timer: CoreMetrics.Timer = lock.withLock {
            let key = name + "|" + event.folder
            if let t = timers[key] { return t }
            let t = CoreMetrics.Timer(label: name, dimensions: [("folder", event.folder)], factory: factory)
            timers[key] = t
            return t
        }
        timer.recordNanoseconds(Int64(seconds * 1e9))
    }

    /// The Prometheus text of `report` (and of the histograms so far).
    func render(_ report: StatusReport) -> String {
        lock.withLock {
            var seen: Set<String> = []
            func gauge(_ name: String, _ labels: [(String, String)], _ value: Double) {
                let key = Self.key(name, labels)
                seen.insert(key)
                let g = gauges[key] ?? CoreMetrics.Gauge(label: name, dimensions: labels, factory: factory)
                gauges[key] = g
                g.record(value)
            }
            func counter(_ name: String, _ labels: [(String, String)], total: Int64) {
                let key = Self.key(name, labels)
                var entry = counters[key] ?? (CoreMetrics.Counter(label: name, dimensions: labels, factory: factory), 0)
                // A total that went down (a folder removed and added again) starts over.
                if total > entry.last { entry.counter.increment(by: total - entry.last) }
                entry.last = total
                counters[key] = entry
            }
            for f in report.folders {
                let folder = [("folder", f.path)]
                let needFiles = Int64(f.needFiles ?? 0), needBytes = f.needBytes ?? 0
                gauge("syncd_folder_local_files", folder, Double(f.localFiles))
                gauge("syncd_folder_local_bytes", folder, Double(f.localBytes))
                gauge("syncd_folder_global_files", folder, Double(Int64(f.localFiles) + needFiles))
                gauge("syncd_folder_global_bytes", folder, Double(f.localBytes + needBytes))
                gauge("syncd_folder_need_files", folder, Double(needFiles))
                gauge("syncd_folder_need_bytes", folder, Double(needBytes))
                gauge("syncd_folder_sequence", folder, Double(f.sequence))
                gauge("syncd_folder_in_error", folder, f.state == "error" ? 1 : 0)
                gauge("syncd_folder_in_sync", folder, f.state == "in sync" ? 1 : 0)
                counter("syncd_folder_received_bytes_total", folder, total: f.bytesIn ?? 0)
                counter("syncd_folder_sent_bytes_total", folder, total: f.bytesOut ?? 0)
                counter("syncd_folder_applies_total", folder, total: Int64(f.applies ?? 0))
                counter("syncd_folder_conflicts_total", folder, total: Int64(f.conflicts ?? 0))
                counter("syncd_folder_errors_total", folder, total: Int64(f.errors ?? 0))
                for p in f.peers ?? [] {
                    let peer = folder + [("device", p.device)]
                    gauge("syncd_peer_connected", peer, p.connected ? 1 : 0)
                    if let rtt = p.rttMs { gauge("syncd_peer_rtt_seconds", peer, rtt / 1000) }
                    if p.connected {
                        gauge("syncd_peer_lag_sequences", peer + [("direction", "send")], Double(p.sendLag ?? 0))
                        gauge("syncd_peer_lag_sequences", peer + [("direction", "receive")], Double(p.receiveLag ?? 0))
                        gauge("syncd_peer_lag_seconds", peer, p.lagSeconds ?? 0)
                    }
                    if let seen = p.lastSeen { gauge("syncd_peer_last_seen_timestamp_seconds", peer, seen) }
                }
            }
            for state in ["alive", "suspect", "dead", "left"] {
                gauge("syncd_gossip_members", [("state", state)], Double(report.members?[state] ?? 0))
            }
            // Series of peers and folders that are gone are dropped, not left at their last value.
            for (key, g) in gauges where !seen.contains(key) {
                g.destroy()
                gauges[key] = nil
            }
            return registry.emitToString()
        }
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + labels.map { "|\($0.0)=\($0.1)" }.joined()
    }
}
