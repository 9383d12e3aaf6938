// The shared-memory queue between backends (producers) and the background worker (consumer).
// A backend never does I/O for auditing: it copies its event in here under a lock and leaves.
//
// The ring and its positions live in a file mapped with MAP_SHARED, $PGDATA/pii_audit/queue,
// mapped by the postmaster and inherited by every process it forks. When a server process
// crashes, PostgreSQL throws its shared memory away and makes it again; the mapping is kept
// (the postmaster never unmaps it) and the page cache keeps its contents, so events already
// queued are stored after the restart instead of lost. What must not outlive a crash stays in
// ordinary shared memory (SharedQueue: the lock, whose holder may have died, the condition
// variable, the worker's latch). A record a writer was copying when it died is recognised (see
// ring_buffer.h), counted as lost and never stored. The file is not synced per event: an
// operating system crash or power loss can lose what it held (see recover_or_create()).
#include "pii_audit_internal.h"

extern "C" {
#include "access/xlog.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <ctime>
#include <cstddef>
#include <cstdlib>
#include <cstring>


namespace {

// If the worker has not been draining for this long, waiting for space is pointless (audit
// database missing, extension not installed there, or a standby): drop and count at once.
constexpr long kConsumerGoneAfterMs = 10000;
// Producers wake the worker only once this much is queued (a quarter of the queue, or half the
// hot span, whichever is less); otherwise it wakes every pii_audit.flush_interval. Waking it for
// every event costs a signal, a context switch and a tiny transaction per event, which under load
// halves the throughput of the statements audited.
constexpr uint64 kWakeWorkerFraction = 4;
// While the worker keeps up, events are written to the first kHotSpanBytes of the ring only (see
// ring_buffer.h); queues smaller than twice that use their whole capacity.
constexpr uint64 kHotSpanBytes = 2 * 1024 * 1024;

// The file's first page; the ring's bytes follow it. Everything here is under SharedQueue::lock.
struct QueueFile {
    char magic[16];
    uint32 version;
    uint32 header_bytes;
    uint64 system_identifier;  // the cluster's (pg_control): a file of another cluster is refused
    uint64 device, inode;      // the file this header was written in: a copy (a base backup, a
                               // restored or copied data directory) is refused, not stored twice
    uint64 capacity;           // the ring's bytes
    char boot_id[40];          // the OS boot during which the file was last in use
    uint32 synced;             // 1: written to disk at a server stop and not changed since
    uint32 padding;
    uint64 generation;         // the worker keeps its position per generation (worker_state)
    pii_audit::RingState ring;
    uint64 next_seq;
    uint64 dropped;            // ever; the worker records gaps up to it (worker_state)
    // Why events were lost at the last start or crash restart, for the worker's gap row;
    // cleared once the row is stored (note_serial tells a newer note from the one it stored).
    uint64 note_serial;
    uint32 note_unknown_loss;  // the note tells of a loss whose size is unknown (a NULL gap row)
    // The only such loss noted is a copied file's refused (a base backup's: the original server
    // stores those events; a standby made with pg_basebackup reports no loss for it).
    uint32 note_copy_only;
    char note[320];
};

constexpr char kQueueMagic[16] = "pii_audit queue";
constexpr uint32 kQueueFileVersion = 2;  // 2: event records carry a server name
constexpr uint64 kQueueHeaderBytes = 4096;
static_assert(sizeof(QueueFile) <= kQueueHeaderBytes, "the header fits its page");
constexpr const char* kQueueDir = "pii_audit";
constexpr const char* kQueuePath = "pii_audit/queue";
constexpr const char* kQueueNewPath = "pii_audit/queue.new";

// Ordinary shared memory: made again at every (re)start, never outlives a crash.
struct SharedQueue {
    LWLock* lock;
    ConditionVariable space_available;
    QueueFile* file;  // the mapping (same address in every process: inherited from the postmaster)
    char* data;       // the ring's bytes, right after the header page
    uint64 capacity;
    uint64 dropped_at_start;  // file->dropped when the server (re)started: status counts since
    uint64 enqueued;
    uint64 persisted;
    uint64 releases;  // batches the worker released (a stall is a wait with no release)
    pg_atomic_uint64 capture_errors;
    pg_atomic_uint64 scorer_inputs;  // bumped when peer groups or departed accounts change
    pg_atomic_uint64 forwarded;      // bumped when a standby's batch committed (forward_events)
    ScorerStatus scorer;             // under lock
    int worker_pid;
    Latch* worker_latch;
    bool worker_ready;
    // A producer waited its whole queue_wait_timeout and the worker released nothing (no
    // batch at all, not merely too little for this producer under heavy load): it is
    // stopped or hung. Until it releases space again, producers drop and count at once, so a
    // stall costs clients one bounded wait, not one per statement.
    bool stalled;
    TimestampTz stalled_since;
    char worker_problem[256];  // set by the worker while storing fails
    TimestampTz last_ready;
    TimestampTz last_flush;
};

SharedQueue* queue = nullptr;
// The postmaster's mapping, kept over crash restarts; forked processes inherit it.
QueueFile* mapped_file = nullptr;
uint64 mapped_bytes = 0;
shmem_request_hook_type prev_shmem_request = nullptr;
shmem_startup_hook_type prev_shmem_startup = nullptr;

uint64 ring_capacity() {
    uint64 bytes = static_cast<uint64>(pii_audit_queue_size_kb) * 1024;
    return bytes / pii_audit::RingBuffer::kAlign * pii_audit::RingBuffer::kAlign;
}

uint64 hot_span(uint64 capacity) { return capacity >= 2 * kHotSpanBytes ? kHotSpanBytes : capacity; }

uint64 wake_threshold(uint64 capacity) {
    uint64 quarter = capacity / kWakeWorkerFraction;
    uint64 half_hot = hot_span(capacity) / 2;
    return quarter < half_hot ? quarter : half_hot;
}

pii_audit::RingBuffer ring_of(char* data, uint64 capacity, pii_audit::RingState* state) {
    return pii_audit::RingBuffer(data, capacity, state, hot_span(capacity));
}

pii_audit::RingBuffer ring_of(SharedQueue* q, pii_audit::RingState* state) {
    return ring_of(q->data, q->capacity, state);
}

void request_shmem() {
    if (prev_shmem_request) prev_shmem_request();
    RequestAddinShmemSpace(sizeof(SharedQueue));
    RequestNamedLWLockTranche("pii_audit", 1);
}

// ---- the queue file ----

// This boot of the operating system ("" if it cannot be told): the page cache, and with it
// every write to the mapping, survives anything but a new boot.
void read_boot_id(char* out, size_t size) {
    out[0] = '\0';
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, out, size - 1);
    close(fd);
    if (n <= 0) n = 0;
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) --n;
    out[n] = '\0';
}

void set_note(QueueFile* f, bool unknown_loss, const char* fmt, ...) pg_attribute_printf(3, 4);
void set_note(QueueFile* f, bool unknown_loss, const char* fmt, ...) {
    if (unknown_loss) {
        f->note_unknown_loss = 1;
        f->note_copy_only = 0;
    }
    // Notes of one start (a refused file, then torn records) are joined.
    size_t used = strlen(f->note);
    if (used > 0 && used + 2 < sizeof f->note) {
        strlcpy(f->note + used, "; ", sizeof f->note - used);
        used += 2;
    }
    va_list args;
    va_start(args, fmt);
    vsnprintf(f->note + used, sizeof f->note - used, fmt, args);
    va_end(args);
    f->note_serial++;
}

QueueFile* map_file(int fd, uint64 bytes, const char* path) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("pii_audit: could not map the audit queue file \"%s\" (%llu bytes): %m",
                               path, static_cast<unsigned long long>(bytes))));
    return static_cast<QueueFile*>(p);
}

// A new queue file of this capacity at path, its blocks allocated now: a mapping of a file with
// holes would kill a backend with SIGBUS when the disk is full, instead of failing here at start.
QueueFile* create_file(const char* path, uint64 capacity, uint64 generation, uint64 next_seq,
                       uint64 dropped, int* fd_out) {
    const uint64 bytes = kQueueHeaderBytes + capacity;
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, pg_file_create_mode);
    if (fd < 0)
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("pii_audit: could not create the audit queue file \"%s\": %m", path)));
    int rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (rc != 0) {
        errno = rc;
        int saved = errno;
        close(fd);
        unlink(path);
        errno = saved;
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("pii_audit: could not allocate %llu bytes for the audit queue file "
                               "\"%s\": %m",
                               static_cast<unsigned long long>(bytes), path),
                        errhint("Free disk space in the data directory, or lower "
                                "pii_audit.queue_size.")));
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("pii_audit: could not stat \"%s\": %m", path)));
    QueueFile* f = map_file(fd, bytes, path);
    memset(f, 0, sizeof *f);
    memcpy(f->magic, kQueueMagic, sizeof f->magic);
    f->version = kQueueFileVersion;
    f->header_bytes = kQueueHeaderBytes;
    f->system_identifier = GetSystemIdentifier();
    f->device = static_cast<uint64>(st.st_dev);
    f->inode = static_cast<uint64>(st.st_ino);
    f->capacity = capacity;
    f->generation = generation;
    f->next_seq = next_seq;
    f->dropped = dropped;
    *fd_out = fd;
    return f;
}

constexpr const char* kCopyRefusal =
    "it is a copy (a base backup or a copied data directory), whose events the original server "
    "stores";

// Why a file's header cannot be used as this cluster's queue, or nullptr.
const char* refusal(const QueueFile* f, const struct stat& st) {
    if (memcmp(f->magic, kQueueMagic, sizeof f->magic) != 0) return "it is not a pii_audit queue file";
    if (f->version != kQueueFileVersion || f->header_bytes != kQueueHeaderBytes)
        return "it has another format version";
    if (f->system_identifier != GetSystemIdentifier()) return "it belongs to another cluster";
    if (f->device != static_cast<uint64>(st.st_dev) || f->inode != static_cast<uint64>(st.st_ino))
        return kCopyRefusal;
    if (f->capacity == 0 || f->capacity % pii_audit::RingBuffer::kAlign != 0 ||
        static_cast<uint64>(st.st_size) != kQueueHeaderBytes + f->capacity)
        return "its size does not match its header";
    return nullptr;
}

// Checks the records a crash may have cut (all writers are dead now) and counts what is lost.
void recover_records(QueueFile* f, char* data, const char* when) {
    pii_audit::RingBuffer ring = ring_of(data, f->capacity, &f->ring);
    uint64 seq_before = f->next_seq;
    pii_audit::RingBuffer::Recovery found = ring.recover();
    if (found.torn > 0) {
        f->dropped += found.torn;
        set_note(f, false, "%llu audit event%s being written to the queue %s were cut short and are "
                 "lost", static_cast<unsigned long long>(found.torn), found.torn == 1 ? "" : "s",
                 when);
    }
    if (found.damaged) {
        set_note(f, true, "the audit queue file was damaged %s: %llu bytes of queued events after its "
                 "last sound record are lost (how many events is unknown)",
                 when, static_cast<unsigned long long>(found.damaged_bytes));
    }
    if (found.complete + found.torn > 0 || found.damaged)
        ereport(LOG, (errmsg("pii_audit: the audit queue kept %llu event%s %s; %llu cut short "
                             "by a crash%s",
                             static_cast<unsigned long long>(found.complete),
                             found.complete == 1 ? "" : "s", when,
                             static_cast<unsigned long long>(found.torn),
                             found.damaged ? "; the rest of the file was damaged" : ""),
                      errdetail("Queue sequence: next %llu.",
                                static_cast<unsigned long long>(seq_before))));
}

// Moves the complete records of an old file (another pii_audit.queue_size) into a new one. What
// does not fit is counted as lost. Both are mapped; nobody else runs yet.
void transfer_records(QueueFile* from, char* from_data, QueueFile* to, char* to_data) {
    pii_audit::RingBuffer src = ring_of(from_data, from->capacity, &from->ring);
    pii_audit::RingBuffer dst = ring_of(to_data, to->capacity, &to->ring);
    const size_t chunk_bytes = 1024 * 1024;
    char* chunk = static_cast<char*>(malloc(chunk_bytes));
    if (chunk == nullptr) ereport(FATAL, (errmsg("pii_audit: out of memory moving the audit queue")));
    uint64 kept = 0, lost = 0;
    uint64 position = from->ring.tail;
    while (position < from->ring.head) {
        uint64 next = position;
        size_t n = src.peek(position, chunk, chunk_bytes, &next);
        if (next == position) break;  // cannot happen: a record is at most half the old ring
        pii_audit::for_each_peeked_record(chunk, n, [&](const char* rec, size_t len) {
            if (dst.push(rec, static_cast<uint32>(len))) ++kept;
            else ++lost;
        });
        position = next;
    }
    free(chunk);
    to->dropped += lost;
    if (lost > 0)
        set_note(to, false, "%llu queued audit events did not fit the smaller queue (pii_audit.queue_size "
                 "was lowered from %llu to %llu bytes while they waited) and are lost",
                 static_cast<unsigned long long>(lost),
                 static_cast<unsigned long long>(from->capacity),
                 static_cast<unsigned long long>(to->capacity));
    ereport(LOG, (errmsg("pii_audit: moved %llu queued audit events into the queue of the new "
                         "size (%llu bytes); %llu did not fit",
                         static_cast<unsigned long long>(kept),
                         static_cast<unsigned long long>(to->capacity),
                         static_cast<unsigned long long>(lost))));
}

// At the postmaster's first start: take over the queue file of the previous run, or make one.
// Errors here stop the server with a message that says which file and why (FATAL at start, when
// nothing runs yet); a file that cannot be used is renamed aside, never deleted.
void recover_or_create(uint64 capacity) {
    if (MakePGDirectory(kQueueDir) != 0 && errno != EEXIST)
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("pii_audit: could not create directory \"%s\": %m", kQueueDir)));
    char boot_id[40];
    read_boot_id(boot_id, sizeof boot_id);
    const uint64 new_generation = static_cast<uint64>(GetCurrentTimestamp());
    char refused[512] = "";
    bool refused_copy = false;

    QueueFile* old_file = nullptr;
    uint64 old_bytes = 0;
    int fd = open(kQueuePath, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("pii_audit: could not open the audit queue file \"%s\": %m",
                               kQueuePath)));
    if (fd >= 0) {
        struct stat st;
        QueueFile header;
        const char* why = nullptr;
        if (fstat(fd, &st) != 0)
            ereport(FATAL, (errcode_for_file_access(),
                            errmsg("pii_audit: could not stat \"%s\": %m", kQueuePath)));
        if (pg_pread(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
            why = "it is too short to hold a header";
        else
            why = refusal(&header, st);
        if (why == nullptr && !header.synced &&
            (boot_id[0] == '\0' || strncmp(header.boot_id, boot_id, sizeof header.boot_id) != 0))
            why = "the operating system restarted since the server last ran, and the server "
                  "had not stopped cleanly (the queue is written to disk only then): the file "
                  "may hold stale or torn pages";
        refused_copy = why == kCopyRefusal;
        if (why == nullptr) {
            old_bytes = kQueueHeaderBytes + header.capacity;
            old_file = map_file(fd, old_bytes, kQueuePath);
            close(fd);
        } else {
            char aside[MAXPGPATH];
            snprintf(aside, sizeof aside, "%s.refused.%lld", kQueuePath,
                     static_cast<long long>(time(nullptr)));
            close(fd);
            if (rename(kQueuePath, aside) != 0)
                ereport(FATAL, (errcode_for_file_access(),
                                errmsg("pii_audit: could not rename \"%s\" to \"%s\": %m",
                                       kQueuePath, aside)));
            ereport(WARNING, (errmsg("pii_audit: the audit queue file was not used: %s", why),
                              errdetail("It was renamed to \"%s\"; events it held are not "
                                        "stored, and the trail records the gap.",
                                        aside)));
            snprintf(refused, sizeof refused,
                     "the audit queue file of the previous run was not used (%s; kept as %s): "
                     "audit events queued in it are lost, how many is unknown",
                     why, aside);
        }
    }

    if (old_file != nullptr && old_file->capacity == capacity) {
        mapped_file = old_file;
        mapped_bytes = old_bytes;
        recover_records(old_file, reinterpret_cast<char*>(old_file) + kQueueHeaderBytes,
                        "when the server last stopped");
    } else {
        int new_fd = -1;
        QueueFile* f = create_file(kQueueNewPath, capacity,
                                   old_file ? old_file->generation : new_generation,
                                   old_file ? old_file->next_seq : 1,
                                   old_file ? old_file->dropped : 0, &new_fd);
        if (old_file != nullptr) {
            char* old_data = reinterpret_cast<char*>(old_file) + kQueueHeaderBytes;
            recover_records(old_file, old_data, "when the server last stopped");
            f->note_serial = old_file->note_serial;
            f->note_unknown_loss = old_file->note_unknown_loss;
            f->note_copy_only = old_file->note_copy_only;
            strlcpy(f->note, old_file->note, sizeof f->note);
            f->dropped = old_file->dropped;
            transfer_records(old_file, old_data, f, reinterpret_cast<char*>(f) + kQueueHeaderBytes);
            munmap(old_file, old_bytes);
        } else if (refused[0] != '\0') {
            set_note(f, true, "%s", refused);
            if (refused_copy) f->note_copy_only = 1;
        }
        if (rename(kQueueNewPath, kQueuePath) != 0)
            ereport(FATAL, (errcode_for_file_access(),
                            errmsg("pii_audit: could not rename \"%s\" to \"%s\": %m",
                                   kQueueNewPath, kQueuePath)));
        close(new_fd);
        mapped_file = f;
        mapped_bytes = kQueueHeaderBytes + capacity;
    }
    // From now on the file changes without being synced until the server stops.
    strlcpy(mapped_file->boot_id, boot_id, sizeof mapped_file->boot_id);
    mapped_file->synced = 0;
}

// At the postmaster's exit (every child has exited): write the queue to disk, so that even an
// operating system restart after a clean stop keeps what is still queued.
void sync_at_exit(int, Datum) {
    if (mapped_file == nullptr || MyProcPid != PostmasterPid) return;
    if (msync(mapped_file, mapped_bytes, MS_SYNC) != 0) {
        ereport(LOG, (errmsg("pii_audit: could not write the audit queue file to disk: %m")));
        return;
    }
    mapped_file->synced = 1;
    (void)msync(mapped_file, kQueueHeaderBytes, MS_SYNC);
}

void startup_shmem() {
    if (prev_shmem_startup) prev_shmem_startup();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    queue = static_cast<SharedQueue*>(ShmemInitStruct("pii_audit queue", sizeof(SharedQueue), &found));
    if (!found) {
        // Run by the postmaster (or a single-user backend) at start and after every crash, when
        // no other process is left: the file's records are checked before anyone writes again.
        if (mapped_file == nullptr) {
            recover_or_create(ring_capacity());
            on_proc_exit(sync_at_exit, 0);
        } else {
            recover_records(mapped_file, reinterpret_cast<char*>(mapped_file) + kQueueHeaderBytes,
                            "when a server process crashed");
        }
        memset(queue, 0, sizeof *queue);
        queue->lock = &(GetNamedLWLockTranche("pii_audit"))->lock;
        ConditionVariableInit(&queue->space_available);
        queue->file = mapped_file;
        queue->data = reinterpret_cast<char*>(mapped_file) + kQueueHeaderBytes;
        queue->capacity = mapped_file->capacity;
        queue->dropped_at_start = mapped_file->dropped;
        pg_atomic_init_u64(&queue->capture_errors, 0);
        pg_atomic_init_u64(&queue->scorer_inputs, 0);
        pg_atomic_init_u64(&queue->forwarded, 0);
    }
    LWLockRelease(AddinShmemInitLock);
}

// A backend-lifetime encoding buffer: allocating during abort cleanup must not raise errors.
char* encode_buffer = nullptr;
size_t encode_buffer_size = 0;

char* reserve_encode_buffer(size_t size) {
    if (size <= encode_buffer_size) return encode_buffer;
    size_t want = size < 8192 ? 8192 : size;
    char* grown = static_cast<char*>(realloc(encode_buffer, want));
    if (grown == nullptr) return nullptr;
    encode_buffer = grown;
    encode_buffer_size = want;
    return grown;
}

// pii_audit.test_crash_while_queueing: this backend reserves its record, copies half of it and
// kills itself with SIGKILL while holding the queue's lock, as a crash in the middle of writing
// an event would. The postmaster then restarts the server; recovery must count the record as
// lost and store every other one. Superuser only: a superuser can end the server anyway.
void die_while_queueing(const char* buffer, size_t length) {
    pii_audit::RingBuffer ring = ring_of(queue, &queue->file->ring);
    uint64 at;
    if (!ring.reserve(static_cast<uint32>(length), &at)) return;  // full: the normal path drops
    ring.write(at, buffer, static_cast<uint32>(length / 2));
    kill(MyProcPid, SIGKILL);
    pg_usleep(10 * 1000 * 1000L);  // SIGKILL cannot be caught; never reached
    abort();
}

bool consumer_alive(TimestampTz now) {
    return queue->worker_ready ||
           (queue->last_ready != 0 &&
            TimestampDifferenceExceeds(queue->last_ready, now, kConsumerGoneAfterMs) == false);
}

}  // namespace

void pii_audit_request_shmem(void) {
    prev_shmem_request = shmem_request_hook;
    shmem_request_hook = request_shmem;
    prev_shmem_startup = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
}

void pii_audit_count_capture_error(void) {
    if (queue) pg_atomic_fetch_add_u64(&queue->capture_errors, 1);
}

bool pii_audit_enqueue(pii_audit::EventView& event, bool allow_wait) {
    if (queue == nullptr) return false;
    const uint64 max_record = ring_of(queue, &queue->file->ring).max_record();
    size_t length = pii_audit::encoded_size(event);
    if (length > max_record) {
        // Only a statement text or column list of extreme size gets here: keep the event.
        event.field[pii_audit::kQueryText] = std::string_view();
        event.header.flags |= pii_audit::kFlagQueryTruncated;
        length = pii_audit::encoded_size(event);
    }
    char* buffer = length <= max_record ? reserve_encode_buffer(length) : nullptr;
    if (buffer == nullptr) {
        pii_audit_count_capture_error();
        LWLockAcquire(queue->lock, LW_EXCLUSIVE);
        queue->file->dropped++;
        LWLockRelease(queue->lock);
        return false;
    }
    pii_audit::encode_event(event, buffer);

    bool sleeping = false;
    TimestampTz deadline = 0;
    uint64 releases_at_wait = 0;
    for (;;) {
        LWLockAcquire(queue->lock, LW_EXCLUSIVE);
        QueueFile* f = queue->file;
        uint64 seq = f->next_seq;
        memcpy(buffer + offsetof(pii_audit::EventHeader, queue_seq), &seq, sizeof seq);
        if (unlikely(pii_audit_test_crash_while_queueing)) die_while_queueing(buffer, length);
        if (ring_of(queue, &f->ring).push(buffer, static_cast<uint32>(length))) {
            f->next_seq++;
            queue->enqueued++;
            Latch* latch = f->ring.head - f->ring.tail >= wake_threshold(queue->capacity)
                               ? queue->worker_latch
                               : nullptr;
            LWLockRelease(queue->lock);
            if (sleeping) ConditionVariableCancelSleep();
            if (latch) SetLatch(latch);
            return true;
        }
        TimestampTz now = GetCurrentTimestamp();
        if (deadline != 0 && now >= deadline && !queue->stalled &&
            queue->releases == releases_at_wait) {
            queue->stalled = true;
            queue->stalled_since = now;
        }
        bool may_wait = allow_wait && pii_audit_on_queue_full == QUEUE_FULL_WAIT &&
                        pii_audit_queue_wait_timeout_ms > 0 && consumer_alive(now) &&
                        !queue->stalled && (deadline == 0 || now < deadline);
        if (!may_wait) {
            queue->file->dropped++;
            Latch* latch = queue->worker_latch;
            LWLockRelease(queue->lock);
            if (sleeping) ConditionVariableCancelSleep();
            if (latch) SetLatch(latch);  // the worker records the gap
            return false;
        }
        Latch* latch = queue->worker_latch;
        const uint64 releases_now = queue->releases;
        LWLockRelease(queue->lock);
        if (latch) SetLatch(latch);
        if (!sleeping) {
            // Prepare, then re-check before the first sleep so a wake-up cannot be missed.
            ConditionVariablePrepareToSleep(&queue->space_available);
            sleeping = true;
            deadline = TimestampTzPlusMilliseconds(now, pii_audit_queue_wait_timeout_ms);
            releases_at_wait = releases_now;
            continue;
        }
        long remaining = TimestampDifferenceMilliseconds(now, deadline);
        ConditionVariableTimedSleep(&queue->space_available, remaining > 0 ? remaining : 1,
                                    PG_WAIT_EXTENSION);
    }
}

void pii_audit_read_status(PiiAuditStatus* out) {
    memset(out, 0, sizeof *out);
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_SHARED);
    out->capacity = queue->capacity;
    out->depth = queue->file->ring.head - queue->file->ring.tail;
    out->enqueued = queue->enqueued;
    out->persisted = queue->persisted;
    out->dropped = queue->file->dropped - queue->dropped_at_start;
    out->worker_pid = queue->worker_pid;
    out->last_flush = queue->last_flush;
    out->worker_ready = queue->worker_ready;
    out->stalled_since = queue->stalled ? queue->stalled_since : 0;
    strlcpy(out->worker_problem, queue->worker_problem, sizeof out->worker_problem);
    LWLockRelease(queue->lock);
    out->capture_errors = pg_atomic_read_u64(&queue->capture_errors);
}

void pii_audit_queue_attach_worker(Latch* latch, int pid) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->worker_latch = latch;
    queue->worker_pid = pid;
    LWLockRelease(queue->lock);
}

void pii_audit_queue_detach_worker(void) {
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->worker_latch = nullptr;
    queue->worker_pid = 0;
    queue->worker_ready = false;
    queue->worker_problem[0] = '\0';
    LWLockRelease(queue->lock);
    // Waiting backends re-check: with no consumer they stop waiting after kConsumerGoneAfterMs.
    ConditionVariableBroadcast(&queue->space_available);
}

void pii_audit_queue_set_ready(bool ready) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->worker_ready = ready;
    if (ready) queue->last_ready = GetCurrentTimestamp();
    LWLockRelease(queue->lock);
}

void pii_audit_queue_count_lost(uint64 events) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->file->dropped += events;
    LWLockRelease(queue->lock);
}

void pii_audit_queue_set_problem(const char* problem) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    strlcpy(queue->worker_problem, problem, sizeof queue->worker_problem);
    LWLockRelease(queue->lock);
}

uint64 pii_audit_queue_generation(void) { return queue->file->generation; }

uint64 pii_audit_queue_note(char* out, size_t size, bool* unknown_loss, bool* copy_only) {
    LWLockAcquire(queue->lock, LW_SHARED);
    uint64 serial = queue->file->note_serial;
    strlcpy(out, queue->file->note, size);
    *unknown_loss = queue->file->note[0] != '\0' && queue->file->note_unknown_loss != 0;
    if (copy_only != nullptr) *copy_only = *unknown_loss && queue->file->note_copy_only != 0;
    LWLockRelease(queue->lock);
    return serial;
}

void pii_audit_queue_clear_note(uint64 serial) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    if (queue->file->note_serial == serial) {
        queue->file->note[0] = '\0';
        queue->file->note_unknown_loss = 0;
        queue->file->note_copy_only = 0;
    }
    LWLockRelease(queue->lock);
}

bool pii_audit_queue_peek(char* buffer, size_t capacity, QueueBatch* batch) {
    // Producers write only past head and never before tail, so once head is read the bytes
    // between tail and head are stable and can be copied without holding the lock.
    pii_audit::RingState snapshot;
    LWLockAcquire(queue->lock, LW_SHARED);
    snapshot = queue->file->ring;
    LWLockRelease(queue->lock);
    batch->data = buffer;
    batch->size = ring_of(queue, &snapshot).peek(snapshot.tail, buffer, capacity,
                                                 &batch->end_position);
    return batch->size > 0;
}

bool pii_audit_queue_peek_after(uint64 from, char* buffer, size_t capacity, QueueBatch* batch) {
    pii_audit::RingState snapshot;
    LWLockAcquire(queue->lock, LW_SHARED);
    snapshot = queue->file->ring;
    LWLockRelease(queue->lock);
    // Only the consumer releases, so a position it peeked before lies between tail and head.
    if (from < snapshot.tail || from > snapshot.head) from = snapshot.tail;
    batch->data = buffer;
    batch->size = ring_of(queue, &snapshot).peek(from, buffer, capacity, &batch->end_position);
    return batch->size > 0;
}

void pii_audit_queue_release(const QueueBatch& batch, uint64 persisted) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->file->ring.tail = batch.end_position;
    queue->releases++;
    queue->stalled = false;
    queue->persisted += persisted;
    queue->last_flush = GetCurrentTimestamp();
    queue->last_ready = queue->last_flush;
    LWLockRelease(queue->lock);
    ConditionVariableBroadcast(&queue->space_available);
}

uint64 pii_audit_queue_dropped(void) {
    LWLockAcquire(queue->lock, LW_SHARED);
    uint64 dropped = queue->file->dropped;
    LWLockRelease(queue->lock);
    return dropped;
}

bool pii_audit_queue_empty(void) {
    LWLockAcquire(queue->lock, LW_SHARED);
    bool empty = queue->file->ring.head == queue->file->ring.tail;
    LWLockRelease(queue->lock);
    return empty;
}

void pii_audit_scorer_inputs_bump(void) {
    if (queue == nullptr) return;
    pg_atomic_fetch_add_u64(&queue->scorer_inputs, 1);
    LWLockAcquire(queue->lock, LW_SHARED);
    Latch* latch = queue->worker_latch;
    LWLockRelease(queue->lock);
    if (latch) SetLatch(latch);
}

void pii_audit_forwarded_bump(void) {
    if (queue == nullptr) return;
    pg_atomic_fetch_add_u64(&queue->forwarded, 1);
    LWLockAcquire(queue->lock, LW_SHARED);
    Latch* latch = queue->worker_latch;
    LWLockRelease(queue->lock);
    if (latch) SetLatch(latch);
}

uint64 pii_audit_forwarded_generation(void) {
    return queue ? pg_atomic_read_u64(&queue->forwarded) : 0;
}

uint64 pii_audit_scorer_inputs_generation(void) {
    return queue ? pg_atomic_read_u64(&queue->scorer_inputs) : 0;
}

void pii_audit_publish_scorer_status(const ScorerStatus& status) {
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->scorer = status;
    LWLockRelease(queue->lock);
}

void pii_audit_read_scorer_status(ScorerStatus* out) {
    memset(out, 0, sizeof *out);
    if (queue == nullptr) return;
    LWLockAcquire(queue->lock, LW_SHARED);
    *out = queue->scorer;
    LWLockRelease(queue->lock);
    if (out->state[0] == '\0') strlcpy(out->state, "not started", sizeof out->state);
}
