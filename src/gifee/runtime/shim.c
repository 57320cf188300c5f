/*
 * gifee-shim: the only process gifee keeps beside a running pod.
 *
 * A pod has no daemon and no Python process watching it (a Python interpreter
 * costs ~10 MB resident; this costs a few hundred kB). The launcher forks the pod's
 * first process, then execs this program in the parent, which
 *   - holds the pod directory's lock (an inherited, flock-ed descriptor) for as long
 *     as the pod lives, which is how other gifee commands know the pod is running;
 *   - copies the pod's stdout and stderr, if given as pipes, to the pod's log file,
 *     and to its own stdout/stderr when the pod runs in the foreground;
 *   - waits for the pod's first process and writes its fate to `exit` in the pod
 *     directory (temporary file, rename: readers see all of it or none): exit code
 *     or signal, and the cgroup's OOM-kill counter. Not flushed to disk: `gifee run`
 *     waits for this process on every pod's start-to-exit, and the record is for the
 *     running machine; after a power loss a pod may show as exited without it, as
 *     after a shim killed by SIGKILL, which every reader already handles;
 *   - exits with the pod's exit code (128 + signal for a signal).
 * It decides nothing else; all policy is in the Python launcher.
 *
 * Usage: gifee-shim POD_DIR_FD CHILD_PID OOM_FILE LOG_FD OUT_PIPE_FD ERR_PIPE_FD TEE
 *   any *_FD may be -1; OOM_FILE may be "-"; TEE is 0 or 1.
 * With POD_DIR_FD -1 it only relays: it ends as its child ended (the same exit code,
 * or killed by the same signal). A pod in a user namespace has one such relay between
 * the recording shim, which must stay host root to write the pod directory, and the
 * pod's first process, which must be forked inside the user namespace.
 *
 * gifee-shim supervise POLICY MAX RECORD_FD -- COMMAND...
 *   runs as the pod's PID 1 when the pod has a restart policy (`gifee run --restart`),
 *   exec'd by stage 2 in place of the command, with the command's user, capabilities
 *   and environment. It runs the command and, as it ends, runs it again if POLICY says
 *   so (always; on-failure: a non-zero exit or a signal), at most MAX times (0: no
 *   limit), after a back-off that doubles from 100 ms to 10 s and starts again once a
 *   run lasted 10 s. Each restart appends a JSON line to RECORD_FD (the pod directory's
 *   `restarts`): its number and how the run before it ended. SIGTERM, SIGINT and SIGHUP
 *   are passed to the command and end the restarts; as PID 1 it also reaps orphans.
 *   It exits as the last run exited (128 + N for a signal N: a PID namespace's init
 *   cannot end itself by a signal).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static long read_oom_kills(const char *path) {
    if (strcmp(path, "-") == 0) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char key[64];
    long value, result = 0;
    while (fscanf(f, "%63s %ld", key, &value) == 2) {
        if (strcmp(key, "oom_kill") == 0) result = value;
    }
    fclose(f);
    return result;
}

/* Copy both pipes until every writer in the pod has closed them. */
static void copy_output(int out_pipe, int err_pipe, int log_fd, int tee) {
    struct pollfd fds[2] = {{out_pipe, POLLIN, 0}, {err_pipe, POLLIN, 0}};
    int targets[2] = {STDOUT_FILENO, STDERR_FILENO};
    int open_count = (out_pipe >= 0) + (err_pipe >= 0);
    char buf[65536];
    while (open_count > 0) {
        int r = poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_count--;
                continue;
            }
            if (log_fd >= 0) write_all(log_fd, buf, (size_t)n);
            if (tee && write_all(targets[i], buf, (size_t)n) < 0) tee = 0; /* terminal gone: keep logging */
        }
    }
}

static volatile sig_atomic_t stopping = 0;
static volatile pid_t running_child = 0;

static void pass_on(int sig) {
    stopping = 1;
    if (running_child > 0) kill(running_child, sig);
}

static int supervise(int argc, char **argv) {
    if (argc < 7 || strcmp(argv[5], "--") != 0) {
        fprintf(stderr, "usage: gifee-shim supervise always|on-failure MAX RECORD_FD -- COMMAND...\n");
        return 125;
    }
    int always = strcmp(argv[2], "always") == 0;
    if (!always && strcmp(argv[2], "on-failure") != 0) {
        fprintf(stderr, "gifee-shim: unknown restart policy %s\n", argv[2]);
        return 125;
    }
    long max = atol(argv[3]);
    int record_fd = atoi(argv[4]);
    char **command = argv + 6;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pass_on;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    long restarts = 0;
    long delay_ms = 100;
    for (;;) {
        struct timespec began, ended;
        clock_gettime(CLOCK_MONOTONIC, &began);
        pid_t pid = fork();
        if (pid < 0) {
            perror("gifee-shim: fork");
            return 125;
        }
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            if (record_fd >= 0) close(record_fd);
            execvp(command[0], command);
            fprintf(stderr, "gifee: %s: %s\n", command[0], strerror(errno));
            _exit(errno == ENOENT ? 127 : 126);
        }
        running_child = pid;
        if (stopping) kill(pid, SIGTERM); /* a stop that came while it was being forked */
        int status = 0;
        for (;;) {
            pid_t got = waitpid(-1, &status, 0); /* PID 1: orphans of the pod end up here too */
            if (got == pid) break;
            if (got < 0 && errno != EINTR) {
                perror("gifee-shim: waitpid");
                return 125;
            }
        }
        running_child = 0;
        clock_gettime(CLOCK_MONOTONIC, &ended);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
        int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        int again = !stopping && (always || sig != 0 || code != 0) && (max <= 0 || restarts < max);
        if (!again) return sig ? 128 + sig : code;

        restarts++;
        if (record_fd >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            char record[256];
            int len = sig ? snprintf(record, sizeof record,
                                     "{\"restart\": %ld, \"exit_code\": null, \"signal\": %d, \"finished_at\": %lld.%09ld}\n",
                                     restarts, sig, (long long)now.tv_sec, now.tv_nsec)
                          : snprintf(record, sizeof record,
                                     "{\"restart\": %ld, \"exit_code\": %d, \"signal\": null, \"finished_at\": %lld.%09ld}\n",
                                     restarts, code, (long long)now.tv_sec, now.tv_nsec);
            write_all(record_fd, record, (size_t)len);
        }
        if (ended.tv_sec - began.tv_sec >= 10) delay_ms = 100; /* it ran a while: start the back-off again */
        struct timespec pause = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
        while (!stopping && nanosleep(&pause, &pause) < 0 && errno == EINTR) {
        }
        if (stopping) return sig ? 128 + sig : code;
        delay_ms = delay_ms * 2 > 10000 ? 10000 : delay_ms * 2;
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "supervise") == 0) return supervise(argc, argv);
    if (argc != 8) {
        fprintf(stderr, "usage: gifee-shim POD_DIR_FD CHILD_PID OOM_FILE LOG_FD OUT_FD ERR_FD TEE\n");
        return 125;
    }
    int pod_fd = atoi(argv[1]);
    pid_t child = (pid_t)atol(argv[2]);
    const char *oom_file = argv[3];
    int log_fd = atoi(argv[4]), out_pipe = atoi(argv[5]), err_pipe = atoi(argv[6]);
    int tee = atoi(argv[7]);

    /* Stopping a pod is signalling its first process; the shim outlives it to record how it ended. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    if (out_pipe >= 0 || err_pipe >= 0) copy_output(out_pipe, err_pipe, log_fd, tee);

    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("gifee-shim: waitpid");
            return 125;
        }
    }
    int code = 0, sig = 0;
    if (WIFEXITED(status)) code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) sig = WTERMSIG(status);
    if (pod_fd < 0) {
        if (sig) {
            signal(sig, SIG_DFL);
            kill(getpid(), sig);
        }
        return sig ? 128 + sig : code;
    }

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char record[512];
    int len;
    if (sig)
        len = snprintf(record, sizeof record,
                       "{\"exit_code\": null, \"signal\": %d, \"oom_kills\": %ld, \"finished_at\": %lld.%09ld}\n",
                       sig, read_oom_kills(oom_file), (long long)now.tv_sec, now.tv_nsec);
    else
        len = snprintf(record, sizeof record,
                       "{\"exit_code\": %d, \"signal\": null, \"oom_kills\": %ld, \"finished_at\": %lld.%09ld}\n",
                       code, read_oom_kills(oom_file), (long long)now.tv_sec, now.tv_nsec);

    int fd = openat(pod_fd, "exit.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        write_all(fd, record, (size_t)len);
        close(fd);
        renameat(pod_fd, "exit.tmp", pod_fd, "exit");
    } else {
        perror("gifee-shim: cannot write the exit record");
    }
    return sig ? 128 + sig : code;
}
