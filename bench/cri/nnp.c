/* The stand-in of registry.k8s.io/e2e-test-images/nonewprivs (critest's no_new_privs specs):
 * installed setuid root, it prints its effective uid. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
